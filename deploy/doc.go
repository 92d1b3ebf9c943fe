// Package deploy holds the deployment files' tests and scripts: the tests
// load ../nats.conf and ../nats-cluster.conf into embedded servers and check
// every role's allowed and denied actions; e2e.sh runs the compose
// deployment end to end. See docs/DEPLOY.md.
package deploy
