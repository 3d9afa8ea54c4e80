"""`python -m guidedrl` (what `accelerate launch -m guidedrl train CONFIG` runs): the command line."""

from guidedrl.cli import app

app()
