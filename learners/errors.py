"""The one error type of the learners layer: a worded refusal (a setting out of range, a strategy without a rule
for the inputs, a backbone that cannot be loaded). It is a ValueError, so callers that caught ValueError still do."""


class LearnerError(ValueError):
    """A worded learners problem; the message says what is wrong and, where there is one, the fix."""
