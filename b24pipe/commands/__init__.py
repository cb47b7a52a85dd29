"""One module per subcommand of `b24pipe`."""

from b24pipe.commands import failed, ingress, portals, replay, run, sim, status, worker

COMMANDS = (run, ingress, worker, portals, failed, status, replay, sim)
