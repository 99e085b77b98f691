"""speakerdemo: speaker embeddings, verification and identification, with a Gradio demo."""
