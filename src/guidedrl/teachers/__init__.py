"""Teachers: pools of whole solutions (AMPO/LUFFY) and, later, scorers of the student's own tokens (TGPO)."""
