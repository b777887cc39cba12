-- Demo database for MAC-SQL: a small online coffee and tea shop.
-- Build: macsql builds it on first use of --db demo (or: sqlite3 shop.sqlite < shop.sql).
PRAGMA foreign_keys = ON;
CREATE TABLE categories (
  category_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  description TEXT
);
CREATE TABLE customers (
  customer_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  email TEXT UNIQUE,
  city TEXT,
  country TEXT,
  signup_date DATE
);
CREATE TABLE products (
  product_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  category_id INTEGER REFERENCES categories(category_id),
  price REAL NOT NULL,
  stock INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE orders (
  order_id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
  order_date DATE NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'delivered', 'cancelled'))
);
CREATE TABLE order_items (
  order_id INTEGER NOT NULL REFERENCES orders(order_id),
  product_id INTEGER NOT NULL REFERENCES products(product_id),
  quantity INTEGER NOT NULL,
  unit_price REAL NOT NULL,
  PRIMARY KEY (order_id, product_id)
);
INSERT INTO categories VALUES (1, 'Coffee', 'Beans and ground coffee');
INSERT INTO categories VALUES (2, 'Tea', 'Loose leaf and bagged tea');
INSERT INTO categories VALUES (3, 'Equipment', 'Grinders, kettles and brewers');
INSERT INTO categories VALUES (4, 'Snacks', 'Biscuits and chocolate');
INSERT INTO customers VALUES (1, 'Ana', 'Weber', 'ana.weber@example.com', 'Madrid', 'Spain', '2025-07-21');
INSERT INTO customers VALUES (2, 'Bruno', 'Silva', 'bruno.silva@example.com', 'Porto', 'Portugal', '2025-09-04');
INSERT INTO customers VALUES (3, 'Carla', 'Weber', 'carla.weber@example.com', 'Lisbon', 'Portugal', '2025-09-07');
INSERT INTO customers VALUES (4, 'David', 'Silva', 'david.silva@example.com', 'Porto', 'Portugal', '2025-07-14');
INSERT INTO customers VALUES (5, 'Elena', 'Costa', 'elena.costa@example.com', 'Barcelona', 'Spain', '2025-02-18');
INSERT INTO customers VALUES (6, 'Felix', 'Schmidt', 'felix.schmidt@example.com', 'Lisbon', 'Portugal', '2025-10-04');
INSERT INTO customers VALUES (7, 'Greta', 'Martin', 'greta.martin@example.com', 'Lisbon', 'Portugal', '2025-10-19');
INSERT INTO customers VALUES (8, 'Hugo', 'Schmidt', 'hugo.schmidt@example.com', 'Lisbon', 'Portugal', '2025-04-02');
INSERT INTO customers VALUES (9, 'Ines', 'Moreau', 'ines.moreau@example.com', 'Madrid', 'Spain', '2025-05-14');
INSERT INTO customers VALUES (10, 'Jonas', 'Garcia', 'jonas.garcia@example.com', 'Porto', 'Portugal', '2025-10-10');
INSERT INTO customers VALUES (11, 'Karin', 'Moreau', 'karin.moreau@example.com', 'Madrid', 'Spain', '2025-02-19');
INSERT INTO customers VALUES (12, 'Luis', 'Ferreira', 'luis.ferreira@example.com', 'Barcelona', 'Spain', '2025-06-04');
INSERT INTO customers VALUES (13, 'Marta', 'Moreau', 'marta.moreau@example.com', 'Porto', 'Portugal', '2025-10-02');
INSERT INTO customers VALUES (14, 'Nils', 'Ferreira', 'nils.ferreira@example.com', 'Barcelona', 'Spain', '2025-08-22');
INSERT INTO customers VALUES (15, 'Olga', 'Moreau', 'olga.moreau@example.com', 'Berlin', 'Germany', '2025-06-15');
INSERT INTO customers VALUES (16, 'Pedro', 'Ferreira', 'pedro.ferreira@example.com', 'Munich', 'Germany', '2025-06-10');
INSERT INTO customers VALUES (17, 'Rosa', 'Martin', 'rosa.martin@example.com', 'Madrid', 'Spain', '2025-12-25');
INSERT INTO customers VALUES (18, 'Sven', 'Martin', 'sven.martin@example.com', 'Porto', 'Portugal', '2025-10-10');
INSERT INTO products VALUES (1, 'Ethiopia Yirgacheffe 250g', 1, 12.5, 67);
INSERT INTO products VALUES (2, 'Colombia Huila 250g', 1, 10.9, 63);
INSERT INTO products VALUES (3, 'Brazil Cerrado 1kg', 1, 29.0, 43);
INSERT INTO products VALUES (4, 'Espresso Blend 500g', 1, 16.75, 57);
INSERT INTO products VALUES (5, 'Decaf Peru 250g', 1, 11.2, 36);
INSERT INTO products VALUES (6, 'Sencha Green Tea', 2, 8.4, 77);
INSERT INTO products VALUES (7, 'Earl Grey', 2, 6.9, 9);
INSERT INTO products VALUES (8, 'Darjeeling First Flush', 2, 14.0, 15);
INSERT INTO products VALUES (9, 'Rooibos Vanilla', 2, 7.5, 65);
INSERT INTO products VALUES (10, 'Hand Grinder', 3, 45.0, 53);
INSERT INTO products VALUES (11, 'Gooseneck Kettle', 3, 59.9, 21);
INSERT INTO products VALUES (12, 'Pour-over Dripper', 3, 22.0, 43);
INSERT INTO products VALUES (13, 'French Press 1L', 3, 34.5, 19);
INSERT INTO products VALUES (14, 'Paper Filters x100', 3, 4.99, 62);
INSERT INTO products VALUES (15, 'Almond Biscotti', 4, 5.5, 53);
INSERT INTO products VALUES (16, 'Dark Chocolate 70%', 4, 3.8, 5);
INSERT INTO products VALUES (17, 'Butter Cookies', 4, 4.2, 9);
INSERT INTO orders VALUES (1, 11, '2026-06-23', 'shipped');
INSERT INTO order_items VALUES (1, 16, 1, 3.8);
INSERT INTO order_items VALUES (1, 15, 3, 5.5);
INSERT INTO order_items VALUES (1, 2, 4, 10.9);
INSERT INTO orders VALUES (2, 3, '2026-01-24', 'delivered');
INSERT INTO order_items VALUES (2, 15, 4, 5.5);
INSERT INTO order_items VALUES (2, 10, 3, 45.0);
INSERT INTO order_items VALUES (2, 12, 1, 22.0);
INSERT INTO orders VALUES (3, 15, '2026-06-06', 'delivered');
INSERT INTO order_items VALUES (3, 2, 3, 10.9);
INSERT INTO order_items VALUES (3, 7, 2, 6.9);
INSERT INTO orders VALUES (4, 8, '2026-07-13', 'pending');
INSERT INTO order_items VALUES (4, 6, 4, 8.4);
INSERT INTO orders VALUES (5, 13, '2026-09-09', 'delivered');
INSERT INTO order_items VALUES (5, 9, 3, 7.5);
INSERT INTO order_items VALUES (5, 14, 4, 4.99);
INSERT INTO orders VALUES (6, 8, '2026-03-03', 'delivered');
INSERT INTO order_items VALUES (6, 8, 2, 14.0);
INSERT INTO orders VALUES (7, 1, '2026-08-27', 'delivered');
INSERT INTO order_items VALUES (7, 10, 2, 45.0);
INSERT INTO order_items VALUES (7, 1, 4, 12.5);
INSERT INTO orders VALUES (8, 12, '2026-10-19', 'shipped');
INSERT INTO order_items VALUES (8, 17, 1, 4.2);
INSERT INTO orders VALUES (9, 15, '2026-09-13', 'shipped');
INSERT INTO order_items VALUES (9, 13, 4, 34.5);
INSERT INTO order_items VALUES (9, 4, 4, 16.75);
INSERT INTO orders VALUES (10, 2, '2026-04-03', 'delivered');
INSERT INTO order_items VALUES (10, 6, 3, 8.4);
INSERT INTO order_items VALUES (10, 4, 1, 16.75);
INSERT INTO orders VALUES (11, 4, '2026-01-19', 'delivered');
INSERT INTO order_items VALUES (11, 4, 1, 16.75);
INSERT INTO order_items VALUES (11, 12, 1, 22.0);
INSERT INTO order_items VALUES (11, 10, 2, 45.0);
INSERT INTO orders VALUES (12, 13, '2026-03-21', 'delivered');
INSERT INTO order_items VALUES (12, 12, 1, 22.0);
INSERT INTO order_items VALUES (12, 16, 1, 3.8);
INSERT INTO orders VALUES (13, 16, '2026-08-16', 'pending');
INSERT INTO order_items VALUES (13, 3, 1, 29.0);
INSERT INTO order_items VALUES (13, 5, 3, 11.2);
INSERT INTO orders VALUES (14, 9, '2026-08-27', 'delivered');
INSERT INTO order_items VALUES (14, 1, 3, 12.5);
INSERT INTO order_items VALUES (14, 7, 2, 6.9);
INSERT INTO order_items VALUES (14, 9, 1, 7.5);
INSERT INTO orders VALUES (15, 10, '2026-02-23', 'delivered');
INSERT INTO order_items VALUES (15, 12, 2, 22.0);
INSERT INTO order_items VALUES (15, 6, 3, 8.4);
INSERT INTO order_items VALUES (15, 16, 2, 3.8);
INSERT INTO orders VALUES (16, 7, '2026-04-27', 'shipped');
INSERT INTO order_items VALUES (16, 8, 4, 14.0);
INSERT INTO order_items VALUES (16, 7, 3, 6.9);
INSERT INTO order_items VALUES (16, 9, 1, 7.5);
INSERT INTO orders VALUES (17, 1, '2026-05-16', 'delivered');
INSERT INTO order_items VALUES (17, 12, 4, 22.0);
INSERT INTO orders VALUES (18, 12, '2026-06-03', 'delivered');
INSERT INTO order_items VALUES (18, 8, 4, 14.0);
INSERT INTO orders VALUES (19, 7, '2026-06-07', 'pending');
INSERT INTO order_items VALUES (19, 1, 3, 12.5);
INSERT INTO order_items VALUES (19, 16, 1, 3.8);
INSERT INTO order_items VALUES (19, 15, 1, 5.5);
INSERT INTO orders VALUES (20, 13, '2026-04-16', 'delivered');
INSERT INTO order_items VALUES (20, 11, 4, 59.9);
INSERT INTO order_items VALUES (20, 3, 4, 29.0);
INSERT INTO orders VALUES (21, 13, '2026-02-24', 'delivered');
INSERT INTO order_items VALUES (21, 5, 1, 11.2);
INSERT INTO orders VALUES (22, 5, '2026-10-15', 'delivered');
INSERT INTO order_items VALUES (22, 16, 2, 3.8);
INSERT INTO order_items VALUES (22, 12, 1, 22.0);
INSERT INTO order_items VALUES (22, 3, 1, 29.0);
INSERT INTO orders VALUES (23, 4, '2026-09-24', 'delivered');
INSERT INTO order_items VALUES (23, 7, 1, 6.9);
INSERT INTO order_items VALUES (23, 17, 3, 4.2);
INSERT INTO orders VALUES (24, 7, '2026-05-17', 'delivered');
INSERT INTO order_items VALUES (24, 11, 4, 59.9);
INSERT INTO order_items VALUES (24, 9, 2, 7.5);
INSERT INTO order_items VALUES (24, 16, 1, 3.8);
INSERT INTO orders VALUES (25, 12, '2026-08-22', 'cancelled');
INSERT INTO order_items VALUES (25, 17, 2, 4.2);
INSERT INTO order_items VALUES (25, 5, 1, 11.2);
INSERT INTO orders VALUES (26, 15, '2026-03-20', 'delivered');
INSERT INTO order_items VALUES (26, 6, 2, 8.4);
INSERT INTO orders VALUES (27, 16, '2026-10-24', 'delivered');
INSERT INTO order_items VALUES (27, 2, 4, 10.9);
INSERT INTO order_items VALUES (27, 11, 1, 59.9);
INSERT INTO order_items VALUES (27, 16, 1, 3.8);
INSERT INTO orders VALUES (28, 8, '2026-04-09', 'delivered');
INSERT INTO order_items VALUES (28, 17, 4, 4.2);
INSERT INTO orders VALUES (29, 1, '2026-02-15', 'shipped');
INSERT INTO order_items VALUES (29, 17, 3, 4.2);
INSERT INTO order_items VALUES (29, 7, 4, 6.9);
INSERT INTO order_items VALUES (29, 12, 4, 22.0);
INSERT INTO orders VALUES (30, 8, '2026-09-09', 'cancelled');
INSERT INTO order_items VALUES (30, 15, 2, 5.5);
INSERT INTO orders VALUES (31, 14, '2026-02-13', 'pending');
INSERT INTO order_items VALUES (31, 3, 4, 29.0);
INSERT INTO order_items VALUES (31, 8, 1, 14.0);
INSERT INTO orders VALUES (32, 7, '2026-05-26', 'delivered');
INSERT INTO order_items VALUES (32, 12, 2, 22.0);
INSERT INTO orders VALUES (33, 9, '2026-03-15', 'delivered');
INSERT INTO order_items VALUES (33, 4, 4, 16.75);
INSERT INTO order_items VALUES (33, 13, 2, 34.5);
INSERT INTO order_items VALUES (33, 15, 2, 5.5);
INSERT INTO orders VALUES (34, 6, '2026-07-17', 'shipped');
INSERT INTO order_items VALUES (34, 14, 3, 4.99);
INSERT INTO order_items VALUES (34, 7, 3, 6.9);
INSERT INTO orders VALUES (35, 3, '2026-06-01', 'shipped');
INSERT INTO order_items VALUES (35, 15, 1, 5.5);
INSERT INTO order_items VALUES (35, 17, 4, 4.2);
INSERT INTO order_items VALUES (35, 12, 3, 22.0);
INSERT INTO orders VALUES (36, 10, '2026-09-03', 'delivered');
INSERT INTO order_items VALUES (36, 4, 1, 16.75);
INSERT INTO orders VALUES (37, 9, '2026-05-02', 'delivered');
INSERT INTO order_items VALUES (37, 5, 3, 11.2);
INSERT INTO order_items VALUES (37, 14, 4, 4.99);
INSERT INTO orders VALUES (38, 5, '2026-09-17', 'pending');
INSERT INTO order_items VALUES (38, 11, 1, 59.9);
INSERT INTO order_items VALUES (38, 3, 2, 29.0);
INSERT INTO order_items VALUES (38, 5, 4, 11.2);
INSERT INTO orders VALUES (39, 3, '2026-05-01', 'delivered');
INSERT INTO order_items VALUES (39, 3, 1, 29.0);
INSERT INTO order_items VALUES (39, 8, 3, 14.0);
INSERT INTO orders VALUES (40, 4, '2026-08-01', 'shipped');
INSERT INTO order_items VALUES (40, 14, 2, 4.99);
INSERT INTO order_items VALUES (40, 9, 1, 7.5);
INSERT INTO order_items VALUES (40, 10, 2, 45.0);
