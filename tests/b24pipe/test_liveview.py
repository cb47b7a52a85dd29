"""The demo's live view reads its figures from the components' /metrics texts."""

from __future__ import annotations

from b24pipe.liveview import Figures, figures, render

INGRESS = """# TYPE b24pipe_ingress_requests_total counter
b24pipe_ingress_requests_total{event="ONCRMDEALUPDATE",outcome="accepted"} 7.0
b24pipe_ingress_requests_total{event="other",outcome="accepted"} 2.0
b24pipe_ingress_requests_total{event="other",outcome="rejected"} 5.0
"""


def worker(ok: float, echo: float, rest: float, depth: float) -> str:
    return f"""# TYPE b24pipe_worker_jobs_total counter
b24pipe_worker_jobs_total{{event="ONCRMDEALUPDATE",outcome="ok"}} {ok}
b24pipe_worker_jobs_total{{event="ONCRMDEALUPDATE",outcome="echo"}} {echo}
b24pipe_worker_jobs_total{{event="ONCRMDEALUPDATE",outcome="retry"}} 1.0
b24pipe_worker_jobs_total{{event="ONCRMDEALUPDATE",outcome="failed"}} 0.0
# TYPE b24pipe_rest_calls_total counter
b24pipe_rest_calls_total{{method="crm.deal.get",status="200"}} {rest}
b24pipe_rest_calls_total{{method="crm.deal.update",status="200"}} 1.0
# TYPE b24pipe_queue_depth gauge
b24pipe_queue_depth{{queue="b24pipe:events"}} {depth}
b24pipe_queue_depth{{queue="b24pipe:lifecycle"}} 0.0
"""


def test_figures_add_up_the_workers_and_count_the_queue_once() -> None:
    got = figures(INGRESS, [worker(3, 1, 4, 6), worker(2, 2, 3, 6)], 12.5)
    assert got == Figures(
        accepted=9, handled=5, echoes=3, retries=2, failed=0, rest=9, queued=6, limiter=12.5
    )


def test_a_component_not_answering_yet_reads_as_zero() -> None:
    assert figures("", [""], 0.0) == Figures()


def test_render_is_one_line() -> None:
    line = render(Figures(accepted=9, handled=5, echoes=3, rest=9, limiter=1.25), now=0)
    assert "\n" not in line
    assert line.endswith(
        " live: accepted 9 | handled 5 | echoes suppressed 3 | handler failures 0 retried, 0 failed"
        " | REST requests 9 | limiter level 1.2 | queued 0"
    )
