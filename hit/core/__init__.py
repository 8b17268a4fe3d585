"""Foundations every level may use: errors, console and progress output, images, stateless seeds, stop signals,
atomic file writes, gin bindings."""
