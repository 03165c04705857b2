# Integration-test services, included by the top Makefile. See e2e/README.md.
#   make services-up        Kafka broker + S3 gateway on 127.0.0.1, env in e2e/.services.env
#   make services-down      stop them and delete their data
#   make services-status    whether each is up
.PHONY: services-up services-down services-status

services-up: deps
	bash e2e/services.sh up

services-down:
	bash e2e/services.sh down

services-status:
	bash e2e/services.sh status
