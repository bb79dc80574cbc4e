"""At most N generation calls in flight per provider, across every run that reports to one Prefect server.

A step's `max_workers` caps the calls of one run; two runs (two deployments, two people, a retry of a
failed run while the first is still going) would together send twice as many. Each call to a provider
holds one slot of the Prefect global concurrency limit `storyboard-<provider>` while it runs:

    with provider_slot(engine.name):
        return engine.image_to_video(model, job, dest)

Which providers are limited:
- fal (every provider in `DEFAULT_SLOTS`): always. Its limit is created with the default the first
  time it is used, and never changed here afterwards: set it to what your account allows with
  `prefect gcl update storyboard-fal --limit 10`.
- any other engine (`local`, or one added with `register_engine`): only if its limit exists, i.e. an
  operator created it (`prefect gcl create storyboard-local --limit 2` for a worker machine shared by
  many runs). The local engine has no account to protect, and a slot is not free: measured on the
  offline demo (2 cores, temporary server), its four clips waited 2-2.6 s each for their slots while
  the other panels rendered, ~40 % on the demo's wall time. Creating it by default would also cap a
  benchmark's `max_workers`.

Whether a provider is limited is looked up once per process and API (a deployed flow run is its own
process, so a limit created or deleted applies from the next run on).

Only with a server (PREFECT_API_URL set). Without one, each process gets a temporary server that sees
only its own run (which `max_workers` already bounds), and the slot counts live in ~/.prefect's database
while the leases live in that server's memory: a run killed while holding a slot leaked it for good
(measured: still held after the lease expired, in the next process). A long-running server keeps its
leases and takes a dead worker's slots back when they expire.

Each call costs two API round trips (acquire, release), and a call that finds the limit full waits for
the server's Retry-After before asking again: right for calls that take seconds to minutes, too slow
for a thousand tiny ones. The slot is held while the engine waits and polls the provider, so a panel
waiting in the provider's own queue counts against the limit: that is the point.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL

# Slots a provider's limit is created with; only these providers' limits are created here.
#   fal: fal.ai runs as many requests of an account at once as its concurrency limit (2 for a new
#        account, up to 40 as credits are bought) and queues the rest, where they still count against
#        our per-call timeout. 4 lets one love-story run (max_workers 4) go at full width and makes two
#        runs share instead of stacking up in fal's queue. Raise it to your account's limit.
DEFAULT_SLOTS: dict[str, int] = {"fal": 4}
# Seconds a slot outlives a process that died holding it (the lease is renewed while the call runs);
# the API's minimum.
LEASE_SECONDS = 60

# (API URL, provider) -> the limit its calls hold a slot of, or None.
_looked_up: dict[tuple[str, str], str | None] = {}
_lock = threading.Lock()


def limit_name(provider: str) -> str:
    """`storyboard-fal`: the global concurrency limit of a provider."""
    slug = re.sub(r"[^a-z0-9]+", "-", provider.lower()).strip("-")
    if not slug:
        raise ValueError(f"not a provider name: {provider!r}")
    return f"storyboard-{slug}"


def ensure_provider_limit(provider: str, default: int | None = None) -> str:
    """Create the provider's limit with `default` slots (else DEFAULT_SLOTS) unless it exists; returns its name.

    An existing limit is left as it is: its size is the operator's setting, not this code's.
    """
    name = limit_name(provider)
    if not limit_exists(name):
        slots = default if default is not None else DEFAULT_SLOTS.get(provider, 4)
        with get_client(sync_client=True) as client:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            except ObjectAlreadyExists:  # another run created it between our read and our create
                pass
    return name


def limit_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return True


def find_limit(provider: str) -> str | None:
    """The limit a call to `provider` holds a slot of: fal's (created if missing), else one an operator made."""
    if provider in DEFAULT_SLOTS:
        return ensure_provider_limit(provider)
    name = limit_name(provider)
    return name if limit_exists(name) else None


def limit_for(provider: str) -> str | None:
    """find_limit, once per provider and API per process (it is a round trip); None without a server."""
    if not PREFECT_API_URL.value():
        return None
    seen = (str(PREFECT_API_URL.value()), provider)
    if seen not in _looked_up:
        found = find_limit(provider)
        with _lock:
            _looked_up[seen] = found
    return _looked_up[seen]


@contextmanager
def provider_slot(provider: str) -> Iterator[None]:
    """Hold one slot of the provider's limit for the duration of the block; waits while the limit is full."""
    name = limit_for(provider)
    if name is None:
        yield
        return
    # strict: a limit deleted while runs use it must not silently become "no limit". A failed lease
    # renewal (an API hiccup during a long call) must not kill a call that is being paid for.
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS, raise_on_lease_renewal_failure=False):
        yield
