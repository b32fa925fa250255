"""`python -m coconut.data <benchmark> ...`: the same as `coconut-data` (see coconut/data/prepare.py)."""

from coconut.data.prepare import main

main()
