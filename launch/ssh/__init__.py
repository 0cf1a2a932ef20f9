"""Multi-node launch over ssh: `python -m launch.ssh --hosts FILE ...` (see `launch.ssh.__main__`)."""
