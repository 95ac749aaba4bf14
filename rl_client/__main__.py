"""`python -m rl_client ...` is the `rl-client` command, for launchers that start a module:
`torchrun --nproc_per_node N -m rl_client train CONFIG`."""

import sys

from rl_client.cli import main

sys.exit(main())
