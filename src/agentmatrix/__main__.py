"""`python -m agentmatrix` runs the CLI."""

from agentmatrix.cli import main

main()
