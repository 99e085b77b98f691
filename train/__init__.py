"""Training, evaluation, HW4 prediction and Hub publishing for speakerdemo encoders (python -m train)."""
