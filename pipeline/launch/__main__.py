"""`python -m pipeline.launch <payload>`: one local rank (the local backend starts each rank this way)."""

import sys

from pipeline.launch.rank import rank_main

rank_main(sys.argv[1])
