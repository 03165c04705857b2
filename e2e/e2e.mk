# End-to-end targets, included by the top Makefile. See e2e/README.md.
#   make images                    OCI archives of eddy and eddy-operator (no Docker)
#   make e2e                       own cluster: e2e/cluster.sh up, the suite, down (always)
#   make e2e KUBECONFIG=path       the suite against an existing cluster; no up/down
#   make e2e-kind                  a kind cluster (needs Docker + kind), the same suite
.PHONY: images e2e e2e-kind

E2E_IMAGES_DIR ?= $(CARGO_TARGET_DIR)/images
EDDY_OPERATOR := $(CARGO_TARGET_DIR)/release/eddy-operator
export IMAGES_DIR := $(E2E_IMAGES_DIR)
export EDDY

images: deps bins
	@mkdir -p $(E2E_IMAGES_DIR)
	# RocksDB's C++ debug info makes the binary ~450 MB; images carry it stripped (~18 MB).
	strip -o $(E2E_IMAGES_DIR)/eddy.stripped $(EDDY)
	bash e2e/image.sh --name eddy.local/eddy:dev --out $(E2E_IMAGES_DIR)/eddy.tar \
	  --entrypoint '["/usr/local/bin/eddy"]' bin:$(E2E_IMAGES_DIR)/eddy.stripped:/usr/local/bin/eddy
	bash e2e/image.sh --name eddy.local/eddy-operator:dev --out $(E2E_IMAGES_DIR)/eddy-operator.tar \
	  --entrypoint '["/usr/local/bin/eddy-operator"]' bin:$(EDDY_OPERATOR):/usr/local/bin/eddy-operator

# Only a KUBECONFIG given on the command line selects an existing cluster: one merely exported
# in the caller's environment must not make `make e2e` test (and clean up in) someone's cluster.
# If it is our own cluster's, load the fresh images into it first.
ifeq ($(origin KUBECONFIG),command line)
e2e: images
	@if [ "$(KUBECONFIG)" = "$$(bash e2e/cluster.sh kubeconfig)" ]; then \
	  for i in eddy eddy-operator; do bash e2e/cluster.sh load $(E2E_IMAGES_DIR)/$$i.tar >/dev/null; done; \
	  PATH="$$(. e2e/lib/versions.sh; echo $$EDDY_CACHE/k8s/$$K8S_VERSION/bin:$$EDDY_CACHE/helm/$$HELM_VERSION/bin):$$PATH" \
	    OWN_CLUSTER=1 bash e2e/tests/run.sh --existing; \
	else bash e2e/tests/run.sh --existing; fi
else
e2e: images
	bash e2e/tests/run.sh --own-cluster
endif

e2e-kind: images
	bash e2e/tests/run.sh --kind
