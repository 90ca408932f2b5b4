"""What the photos mean and how they are chosen: attribute labels (UTKFace names or a CSV),
completion masks and the blend, seeded subsets and hold-out splits."""
