-- Example HIS schema the lookup service reads (read-only), as the legacy mkiso_multiple.php
-- found it: pacsdb_his maps AccessionNumber -> MEDRECID and RegID, rsabt201107 maps
-- MEDRECID -> Nama (the patient's name). The queries are settings; see README.md.
CREATE DATABASE IF NOT EXISTS pacsdb_his CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS rsabt201107 CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS pacsdb_his.accessions (
    AccessionNumber VARCHAR(16) NOT NULL PRIMARY KEY,
    MEDRECID        VARCHAR(32) NOT NULL,
    RegID           VARCHAR(32) NULL,
    KEY idx_medrec (MEDRECID)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS rsabt201107.pasien (
    MEDRECID VARCHAR(32)  NOT NULL PRIMARY KEY,
    Nama     VARCHAR(128) NOT NULL
) ENGINE=InnoDB;
