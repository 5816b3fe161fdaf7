import sys

from vipcast.cli.main import main

sys.exit(main())
