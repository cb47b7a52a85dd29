"""Process kits: real ingress, worker and Redis processes for the tests and the benchmarks
(which import nothing from `tests`)."""
