"""PHG-MAE: masked hypergraph autoencoders over modalities (model, masking, training, ensembles)."""
