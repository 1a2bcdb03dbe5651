"""Training of the bundled model: data generation (:mod:`.data`, :mod:`.scenes`) and the
contrastive training loop (:mod:`.train`)."""
