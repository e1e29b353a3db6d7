"""The papers' baselines (CF, BF, NGTO, GA, fixed): pure routing plans and their agent adapter."""
