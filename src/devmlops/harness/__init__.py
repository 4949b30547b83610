"""A local control plane (etcd + kube-apiserver from binaries) with the devmlops processes beside it.

``make run`` and the integration tests share it, so what a person sees in the demo is what the tests check.
"""
