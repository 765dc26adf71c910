-- Synthetic rows for the local stack and the tests (no real patients).
INSERT INTO rsabt201107.pasien (MEDRECID, Nama) VALUES
    ('RM000001', 'Budi Santoso'),
    ('RM000002', 'Siti Nurhaliza'),
    ('RM000003', 'O''Brien^Mary Ann'),
    ('RM000004', 'Dewi Anggraini, S.Kom.'),
    ('RM000005', 'Nuñez^José');
INSERT INTO pacsdb_his.accessions (AccessionNumber, MEDRECID, RegID) VALUES
    ('MR.001', 'RM000001', 'REG-1001'),
    ('CT.002', 'RM000001', 'REG-1002'),
    ('ACC001', 'RM000001', 'REG-1003'),
    ('CT.100', 'RM000002', 'REG-2001'),
    ('US.200', 'RM000003', 'REG-3001'),
    ('MR.300', 'RM000004', 'REG-4001'),
    ('CR.400', 'RM000005', NULL);
