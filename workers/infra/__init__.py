"""What the tiers stand on, apart from the tiers themselves: the Redis launcher
(redis_server), a network between workers and Redis (latency_proxy), the join's
certificates and ACL users (tls, acl), hosts in network namespaces (netns), and the
redaction every record, log and event passes (redact)."""
