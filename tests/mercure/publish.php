<?php
// Publishes one update with Symfony's Mercure component (Debian's php-symfony-mercure), as an application
// would: php publish.php HUB_URL TOKEN TOPIC DATA public|private [ID]. Prints the id the hub answered.
require '/usr/share/php/Symfony/Component/Mercure/autoload.php';

use Symfony\Component\Mercure\Hub;
use Symfony\Component\Mercure\Jwt\StaticTokenProvider;
use Symfony\Component\Mercure\Update;

[, $url, $token, $topic, $data, $visibility] = $argv;
$hub = new Hub($url, new StaticTokenProvider($token));
echo $hub->publish(new Update($topic, $data, $visibility === 'private', $argv[6] ?? null));
