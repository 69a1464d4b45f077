"""The labeling loop: Trainer, batch strategies, the fit, scoring, classifier files and exports."""
