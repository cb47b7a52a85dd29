"""The uninstall confirmation's token check under the refresh lock: it takes the same lock
as every refresh, and a refresh it has to make is saved the way every refresh is."""

from __future__ import annotations

import redis

from b24pipe.sim.client import SimClient
from shared import portalstore as store
from shared.keys import Keys
from shared.portals import Status
from shared.settings import load_settings
from tests.support.clientkit import cipher_of, install, stored
from workers.portals.lifecycle import confirm_uninstall


def _uninstall(member_id: str) -> dict[str, object]:
    return {"id": f"u-{member_id}", "name": "ONAPPUNINSTALL", "member_id": member_id, "data": {}}


def test_a_check_that_had_to_refresh_saves_the_new_pair(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env)
    keys = Keys(env["B24PIPE_NAMESPACE"])
    before = stored(r, env, member)
    simulator.expire_tokens(member)  # app.info says expired_token: only a refresh can tell
    assert confirm_uninstall(_uninstall(member)) == "unconfirmed: tokens still work (refreshed)"
    after = stored(r, env, member)
    assert after.status is Status.ACTIVE and after.token_gen == before.token_gen + 1
    fresh = after.open_refresh(cipher_of(env))
    assert fresh != pair.refresh_token
    assert simulator.refresh(pair.refresh_token).status != 200  # used up by the check
    assert r.zscore(keys.token_issued, member) == after.updated_at  # indexed like any new pair
    assert after.expires > after.updated_at
    assert not r.exists(keys.refresh_lock(member))
    assert simulator.refresh(fresh).status == 200  # the saved pair is the live one


def test_a_refresh_in_flight_postpones_the_check(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    keys = Keys(env["B24PIPE_NAMESPACE"])
    refreshing = store.RefreshLock.of(keys, member, store.refresh_lease(load_settings()))
    assert store.run(r, store.take_lock(refreshing))  # as `TokenStore.refresh` takes it
    assert confirm_uninstall(_uninstall(member)).startswith("cannot tell yet (token refresh in progress)")
    assert r.get(keys.refresh_lock(member)) == refreshing.holder.encode()  # not released by the check
    assert simulator.stats(member)["refreshes"] == 0
