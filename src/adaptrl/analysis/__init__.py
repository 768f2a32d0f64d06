"""Studies of estimator quality: meta-gradient variance and accuracy, update directions."""
