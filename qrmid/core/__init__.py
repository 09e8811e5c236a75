"""The domain: resources, their queues and schedulers, tasks and leases. Knows nothing of gRPC."""
