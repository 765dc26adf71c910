-- Synthetic rows for the local stack and the tests (no real patients).
INSERT INTO rsabt201107.pasien (MEDRECID, Nama) VALUES
    ('RM000001', 'Budi Santoso'),
    ('RM000002', 'Siti Nurhaliza'),
    ('RM000003', 'O''Brien^Mary Ann'),
    ('RM000004', 'Dewi Anggraini, S.Kom.'),
    ('RM000005', 'Nuñez^José'),
    ('RM000106', 'Agus Wijaya'),
    ('RM000107', 'Rina Kusuma'),
    ('RM000108', 'Hendra Gunawan'),
    ('RM000109', 'Lestari^Putri'),
    ('RM000110', 'Yusuf Habibi');
INSERT INTO pacsdb_his.accessions (AccessionNumber, MEDRECID, RegID) VALUES
    ('MR.001', 'RM000001', 'REG-1001'),
    ('CT.002', 'RM000001', 'REG-1002'),
    ('ACC001', 'RM000001', 'REG-1003'),
    ('CT.100', 'RM000002', 'REG-2001'),
    ('US.200', 'RM000003', 'REG-3001'),
    ('MR.300', 'RM000004', 'REG-4001'),
    ('CR.400', 'RM000005', NULL),
    ('DX.500', 'RM000106', 'REG-6001'),
    ('CT.600', 'RM000107', 'REG-7001'),
    ('MR.700', 'RM000108', 'REG-8001'),
    ('CT.800', 'RM000109', 'REG-9001'),
    ('MR.900', 'RM000110', 'REG-10001');
