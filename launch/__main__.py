"""`python -m launch` is the `powernet` command."""

from launch.cli import main

main()
