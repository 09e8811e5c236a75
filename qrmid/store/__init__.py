"""Durable state: the journal of tasks and leases that a restarted daemon recovers from."""
