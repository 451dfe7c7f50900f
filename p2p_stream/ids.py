"""Device ids (and the names the cluster gives daemons): one rule, used by the wire protocol and the config alike,
kept free of imports so the config can check a name without loading the stream stack."""

import re

DEVICE_MAX_BYTES = 64
DEVICE_RE = re.compile(rf"\A[A-Za-z0-9_.:-]{{1,{DEVICE_MAX_BYTES}}}\Z")
