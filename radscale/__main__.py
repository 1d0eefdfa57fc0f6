import sys

from radscale.cli.main import main

sys.exit(main())
