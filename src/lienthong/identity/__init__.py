"""Vietnamese identity toolkit: identifier checks; name, date, sex, phone, address normalisation."""
