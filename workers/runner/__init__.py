"""The RQ-compatible job runner: `worker` takes jobs in batches and runs them
(`workers.dispatch.run_event` for events), `outcome` says in one typed vocabulary what
became of each, and `acks` hands that to `ack.lua`."""
