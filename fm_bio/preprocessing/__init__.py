"""Signal preprocessing: ECG -> beats -> 1 Hz heart rate, normalisation, activity, epoch quality control."""
