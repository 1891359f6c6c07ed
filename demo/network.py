"""The demo's network: real places on the French Riviera (Nice, Monaco and the
hills behind them). Coordinates are public place locations, rounded to ~10 m.

Three hubs make every shape of chain appear:
  producers in Grasse/Cannes/Antibes → nce-dc (regional DC) → nce-hub / mco-hub → doors
  producers near the DC → nce-dc → doors in Cagnes / Saint-Laurent (no middle leg)
"""

from __future__ import annotations

HUBS = [
    # code, name, kind, (lat, lng), address, service radius km, cut-offs
    (
        "nce-dc",
        "Nice Var Regional DC",
        "distribution_center",
        (43.6730, 7.1900),
        "Zone industrielle, 06700 Saint-Laurent-du-Var",
        35,
        ["11:00", "15:00", "19:00"],
    ),
    (
        "nce-hub",
        "Nice Saint-Roch City Hub",
        "depot",
        (43.7166, 7.2822),
        "Boulevard de l'Armée des Alpes, 06300 Nice",
        8,
        ["10:00", "16:00"],
    ),
    (
        "mco-hub",
        "Monaco Fontvieille Hub",
        "cross_dock",
        (43.7311, 7.4167),
        "Avenue de Fontvieille, 98000 Monaco",
        9,
        ["10:00", "16:00"],
    ),
]

PRODUCERS = [
    (
        "Parfumerie de Grasse",
        "producer",
        (43.6580, 6.9250),
        "Boulevard Fragonard, 06130 Grasse",
    ),
    (
        "Confiserie du Loup",
        "producer",
        (43.7176, 6.9956),
        "Pont-du-Loup, 06140 Tourrettes-sur-Loup",
    ),
    (
        "Marché Forville Traders",
        "supplier",
        (43.5530, 7.0130),
        "Rue du Marché Forville, 06400 Cannes",
    ),
    ("Moulin d'Antibes", "producer", (43.5808, 7.1251), "Cours Masséna, 06600 Antibes"),
    (
        "Verrerie de Biot",
        "producer",
        (43.6285, 7.0977),
        "Chemin des Combes, 06410 Biot",
    ),
    (
        "Boulangerie de Vence",
        "producer",
        (43.7225, 7.1120),
        "Place du Grand Jardin, 06140 Vence",
    ),
    (
        "Carros Industrial Supply",
        "supplier",
        (43.7886, 7.1866),
        "Zone industrielle, 06510 Carros",
    ),
    (
        "Domaine de Bellet",
        "producer",
        (43.7180, 7.2230),
        "Chemin de Saquier, 06200 Nice",
    ),
]

# Neighbourhood anchors for customers: (name, (lat, lng), weight in the draw).
CUSTOMER_AREAS = [
    ("Vieux Nice, 06300 Nice", (43.6966, 7.2760), 3),
    ("Rue Gambetta, 06000 Nice", (43.6985, 7.2540), 3),
    ("Libération, 06000 Nice", (43.7155, 7.2620), 3),
    ("Riquier, 06300 Nice", (43.7050, 7.2900), 2),
    ("Cimiez, 06000 Nice", (43.7200, 7.2750), 2),
    ("Magnan, 06200 Nice", (43.6960, 7.2450), 2),
    ("Monte-Carlo, 98000 Monaco", (43.7396, 7.4276), 3),
    ("La Condamine, 98000 Monaco", (43.7350, 7.4200), 2),
    ("Larvotto, 98000 Monaco", (43.7450, 7.4330), 1),
    ("Beausoleil, 06240", (43.7430, 7.4230), 2),
    ("Cap-d'Ail, 06320", (43.7225, 7.4040), 1),
    ("Cagnes-sur-Mer, 06800", (43.6637, 7.1489), 2),
    ("Villeneuve-Loubet, 06270", (43.6580, 7.1220), 1),
]

FIRST_NAMES = [
    "Camille",
    "Louis",
    "Léa",
    "Hugo",
    "Chloé",
    "Lucas",
    "Manon",
    "Jules",
    "Inès",
    "Gabriel",
    "Sarah",
    "Arthur",
    "Emma",
    "Nathan",
    "Jade",
    "Raphaël",
    "Alice",
    "Tom",
    "Lina",
    "Enzo",
]
LAST_NAMES = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "Rossi",
    "Bianchi",
    "Giordano",
]
STREETS = [
    "Rue de France",
    "Avenue Jean Médecin",
    "Boulevard Victor Hugo",
    "Rue Masséna",
    "Avenue de la Costa",
    "Boulevard des Moulins",
    "Rue Grimaldi",
    "Avenue Princesse Grace",
    "Rue de la République",
    "Boulevard Gambetta",
    "Avenue Borriglione",
    "Rue Bonaparte",
]

# (hub code, vehicle type, capacity kg, m³, parcels, skills, count)
FLEET = [
    ("nce-dc", "van", 900, 10, 150, [], 3),
    ("nce-dc", "truck", 7000, 40, 1200, ["tail_lift"], 1),
    ("nce-hub", "van", 800, 9, 120, [], 3),
    ("nce-hub", "cargo_bike", 150, 1.5, 30, [], 1),
    ("mco-hub", "van", 700, 8, 110, ["refrigerated"], 2),
    ("mco-hub", "cargo_bike", 150, 1.5, 30, [], 1),
]
