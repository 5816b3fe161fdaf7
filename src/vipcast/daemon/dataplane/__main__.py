import sys

from vipcast.daemon.dataplane.process import main

sys.exit(main())
