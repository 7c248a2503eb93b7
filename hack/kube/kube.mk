# kube.mk: include from the top-level Makefile (`include hack/kube/kube.mk`).
# kube-tools builds kube-apiserver and etcd into .bin/kube for the k8s package's envtest tests;
# it is quick when they are already there with the right versions. Cold, it takes up to 20
# minutes on 2 cores, and build.sh says so: each step, its expected time, progress, time taken.

KUBE_TOOLS_DIR ?= .bin/kube

.PHONY: kube-tools
kube-tools:
	bash hack/kube/build.sh $(KUBE_TOOLS_DIR)
