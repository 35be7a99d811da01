"""Worked solutions of the exercises: read them after trying (`pytest exercises --solutions`)."""
