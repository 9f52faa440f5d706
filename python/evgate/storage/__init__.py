"""storage: everything that speaks SQL — migrations, queries, the group-commit writer, and the
embedded PostgreSQL used when no database is configured. The only room that imports asyncpg."""
