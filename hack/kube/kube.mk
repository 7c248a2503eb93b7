# kube.mk: include from the top-level Makefile (`include hack/kube/kube.mk`).
# kube-tools builds kube-apiserver and etcd into .bin/kube for the k8s package's envtest tests;
# it is quick when they are already there with the right versions.

KUBE_TOOLS_DIR ?= .bin/kube

.PHONY: kube-tools
kube-tools:
	bash hack/kube/build.sh $(KUBE_TOOLS_DIR)
