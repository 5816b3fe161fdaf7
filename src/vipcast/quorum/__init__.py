"""Leadership from a quorum store: the etcd client adapter and the election service."""
