"""The portal jobs that keep the connection alive: event bindings, keep-alive, the delivery
probe, install re-verification and uninstall confirmation, the offline drain. Jobs queue
them by the stable paths in `workers.lifecycle`."""
