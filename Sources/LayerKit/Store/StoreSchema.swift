/// The layer store's schema history (`ROOT/metadata.db`). Append steps; never edit a released one.
///
/// Digests are stored as text (`sha256:<hex>`), times as seconds since the epoch, sizes in bytes.
/// Foreign keys with `ON DELETE RESTRICT` make the database itself refuse a record that would
/// point at a missing layer: an image's top layer, a layer's parent, a container's layer.
/// An image's layers are its top layer's chain (`parent` links), so they are not stored twice.
enum StoreSchema {
    static let migrations: [Migration] = [
        Migration(version: 1, name: "layers, images, containers", sql: """
            CREATE TABLE store_settings (
                key   TEXT PRIMARY KEY,
                value TEXT NOT NULL
            );
            CREATE TABLE layers (
                chain_id    TEXT    PRIMARY KEY,
                diff_id     TEXT    NOT NULL,
                blob_digest TEXT,
                blob_size   INTEGER,
                media_type  TEXT,
                parent      TEXT    REFERENCES layers (chain_id) ON DELETE RESTRICT,
                link        TEXT    NOT NULL UNIQUE,
                size        INTEGER NOT NULL,
                created     INTEGER NOT NULL,
                CHECK (parent IS NULL OR parent <> chain_id)
            );
            CREATE INDEX layers_parent ON layers (parent);
            CREATE TABLE images (
                name            TEXT    PRIMARY KEY,
                manifest_digest TEXT    NOT NULL,
                config_digest   TEXT    NOT NULL,
                top_chain_id    TEXT    REFERENCES layers (chain_id) ON DELETE RESTRICT,
                created         INTEGER NOT NULL
            );
            CREATE INDEX images_top ON images (top_chain_id);
            CREATE TABLE containers (
                id         TEXT    PRIMARY KEY,
                image      TEXT,
                chain_id   TEXT    REFERENCES layers (chain_id) ON DELETE RESTRICT,
                driver     TEXT    NOT NULL,
                mountpoint TEXT,
                state      TEXT    NOT NULL,
                created    INTEGER NOT NULL
            );
            CREATE INDEX containers_chain ON containers (chain_id);
            """),
        Migration(version: 2, name: "container mount options", sql: """
            ALTER TABLE containers ADD COLUMN read_only  INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE containers ADD COLUMN volatile   INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE containers ADD COLUMN daemon_pid INTEGER;
            CREATE UNIQUE INDEX containers_mountpoint ON containers (mountpoint) WHERE mountpoint IS NOT NULL;
            """),
        // containerd's snapshots (`layertool snapshotter`): a committed one names its layer (the
        // layer gc keeps), an active or view one its committed parent. `id` names the dir
        // ROOT/snapshots/<id> and is never reused (AUTOINCREMENT). Times in nanoseconds; labels
        // a JSON object.
        Migration(version: 3, name: "containerd snapshots", sql: """
            CREATE TABLE snapshots (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                name       TEXT    NOT NULL UNIQUE,
                kind       TEXT    NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
                parent     INTEGER REFERENCES snapshots (id) ON DELETE RESTRICT,
                chain_id   TEXT    REFERENCES layers (chain_id) ON DELETE RESTRICT,
                owns_layer INTEGER NOT NULL DEFAULT 0,
                labels     TEXT    NOT NULL DEFAULT '{}',
                created    INTEGER NOT NULL,
                updated    INTEGER NOT NULL,
                CHECK ((kind = 'committed') = (chain_id IS NOT NULL)),
                CHECK (parent IS NULL OR parent <> id)
            );
            CREATE INDEX snapshots_parent ON snapshots (parent);
            CREATE INDEX snapshots_chain ON snapshots (chain_id);
            """),
    ]

    /// The schema version this code writes.
    static var latestVersion: Int { migrations.count }
}
