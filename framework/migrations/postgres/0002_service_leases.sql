-- Work that one replica at a time does (the pool manager): who holds it,
-- until when. A holder renews its lease; another takes it once it expired.
CREATE TABLE service_leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);
