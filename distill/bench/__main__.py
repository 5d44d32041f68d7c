"""`python -m distill.bench probe ...`: the memory probe's subprocess entry (see distill.bench.probe)."""

import sys

from distill.bench.probe import main

main(sys.argv[1:])
