"""``python -m agent_coherence``: the ``agent-coherence`` command, for an environment whose
scripts directory is not on ``PATH``."""

from agent_coherence.cli import main

raise SystemExit(main())
