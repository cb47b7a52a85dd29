"""RQ settings for RQ's own tools, pointing at the same Redis as `REDIS_URL`:
`rq info -c b24pipe.rqconfig` (or `RQ_CONFIG=b24pipe.rqconfig`, rq-dashboard's config).

RQ reads Sentinel only from a config module's `SENTINEL` dict, and `REDIS_URL` there would
be handed to redis-py's `from_url`, which does not know `redis+sentinel://`: this module
turns b24pipe's `REDIS_URL` into whichever of the two RQ understands. RQ's `--url` and
`RQ_REDIS_URL` win over any config module, so leave them unset.
"""

from __future__ import annotations

from typing import Any

from shared.redisurl import parse_redis_url
from shared.settings import load_settings

_url = load_settings().redis_url_or_default()
_target = parse_redis_url(_url)
if _target is None:
    REDIS_URL: str = _url
else:
    SENTINEL: dict[str, Any] = _target.rq_config()
