"""The IWAE chapter (Burda, Grosse & Salakhutdinov 2016): its config, claims and experiment runs."""
