"""guidedrl: RL with verifiable rewards, guided by teachers and hints when the student fails."""

__version__ = "0.1.0"
