//! `vnid gen-population`: a deterministic synthetic population in the
//! export format — realistic enough to exercise matching, loading and
//! benchmarks, and entirely made up.
//!
//! People come in households (a head, often a spouse, children, sometimes
//! a parent of the head). Names are drawn with the rough frequencies of
//! Vietnamese family, middle and given names; ages run from 0 to 100 with
//! fewer of the old; every ID number agrees with its person's birth year and
//! gender and is unique; adults carry old CMND numbers; a small share of
//! births are known only by year (or year and month), of people deceased,
//! of cards cancelled. The same options always give the same file.

use crate::clock::{UnixSeconds, civil_from_days, days_from_civil};
use crate::domain::{
    CitizenStatus, Gender, OldIdNumber, PartialDate, PersonalIdNumber, province_name,
};

use crate::mirror::ExportRecord;

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub count: u64,
    /// The registration province of every ID number (and the addresses).
    pub province: u16,
    pub seed: u64,
    /// The date the population is "as of": ages and `updated_at` count back
    /// from it.
    pub as_of: UnixSeconds,
}

/// 2026-01-01T00:00:00Z.
pub const DEFAULT_AS_OF: UnixSeconds = 1_767_225_600;

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }

    fn pick<'a>(&mut self, table: &'a [(&'a str, u32)]) -> &'a str {
        let total: u64 = table.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (item, weight) in table {
            if x < u64::from(*weight) {
                return item;
            }
            x -= u64::from(*weight);
        }
        table.last().map_or("", |(item, _)| item)
    }
}

// Frequencies in tenths of a percent, after published surveys of family names.
const FAMILY_COMMON: &[(&str, u32)] = &[
    ("Nguyễn", 384),
    ("Trần", 121),
    ("Lê", 95),
    ("Phạm", 70),
    ("Phan", 45),
    ("Đặng", 21),
    ("Bùi", 20),
    ("Đỗ", 14),
    ("Hồ", 13),
    ("Ngô", 13),
    ("Dương", 10),
    ("Lý", 5),
    ("Đinh", 5),
    ("Trương", 5),
    ("Lâm", 4),
    ("Mai", 4),
    ("Tô", 3),
];
/// Where the north writes Hoàng and Vũ, the south writes Huỳnh and Võ; and
/// a few rarer names are regional.
const FAMILY_NORTH: &[(&str, u32)] = &[
    ("Hoàng", 51),
    ("Vũ", 39),
    ("Đào", 3),
    ("Cao", 3),
    ("Trịnh", 3),
    ("Lương", 2),
    ("Tạ", 2),
];
const FAMILY_SOUTH: &[(&str, u32)] = &[
    ("Huỳnh", 51),
    ("Võ", 39),
    ("Châu", 3),
    ("Thái", 3),
    ("Quách", 2),
    ("Lưu", 2),
    ("Tăng", 2),
];
const MIDDLE_MALE: &[(&str, u32)] = &[
    ("Văn", 40),
    ("Minh", 10),
    ("Đức", 8),
    ("Quốc", 7),
    ("Hoàng", 6),
    ("Thanh", 6),
    ("Hữu", 6),
    ("Công", 5),
    ("Gia", 5),
    ("Ngọc", 4),
    ("Tuấn", 3),
    ("Trọng", 3),
    ("Đình", 3),
    ("Xuân", 2),
];
const MIDDLE_FEMALE: &[(&str, u32)] = &[
    ("Thị", 45),
    ("Ngọc", 12),
    ("Thanh", 8),
    ("Thu", 7),
    ("Kim", 6),
    ("Mỹ", 6),
    ("Hồng", 5),
    ("Bảo", 4),
    ("Phương", 4),
    ("Thùy", 3),
    ("Diệu", 2),
    ("Khánh", 2),
    ("Hoài", 2),
];
const GIVEN_MALE: &[(&str, u32)] = &[
    ("Anh", 60),
    ("Hùng", 45),
    ("Dũng", 42),
    ("Tuấn", 40),
    ("Minh", 38),
    ("Nam", 35),
    ("Hải", 33),
    ("Long", 31),
    ("Phúc", 29),
    ("Khang", 28),
    ("Bảo", 27),
    ("Huy", 26),
    ("Đức", 25),
    ("Thành", 24),
    ("Trung", 23),
    ("Hiếu", 22),
    ("Quân", 21),
    ("Tùng", 20),
    ("Sơn", 19),
    ("Việt", 19),
    ("Kiên", 18),
    ("Tài", 17),
    ("Thắng", 17),
    ("Lộc", 16),
    ("Phát", 16),
    ("Tâm", 15),
    ("Nhân", 15),
    ("Khoa", 14),
    ("Đạt", 14),
    ("Duy", 14),
    ("Hưng", 13),
    ("Thịnh", 13),
    ("Vinh", 12),
    ("Cường", 12),
    ("Toàn", 11),
    ("Tú", 11),
    ("Hòa", 10),
    ("Quang", 10),
    ("Thuận", 9),
    ("Đàm", 4),
    ("Khoẻ", 2),
    ("Nguyên", 9),
];
const GIVEN_FEMALE: &[(&str, u32)] = &[
    ("Linh", 60),
    ("Hương", 45),
    ("Lan", 42),
    ("Trang", 40),
    ("Ngọc", 38),
    ("Thảo", 35),
    ("Hà", 33),
    ("Mai", 31),
    ("Hoa", 29),
    ("Phương", 28),
    ("Thủy", 27),
    ("Anh", 26),
    ("Vy", 25),
    ("Nhung", 24),
    ("Yến", 23),
    ("Hằng", 22),
    ("Nga", 21),
    ("Oanh", 20),
    ("Tâm", 19),
    ("Dung", 19),
    ("Hạnh", 18),
    ("Huyền", 17),
    ("Nhi", 17),
    ("Trâm", 16),
    ("Uyên", 16),
    ("Thư", 15),
    ("Hiền", 15),
    ("Loan", 14),
    ("Diễm", 14),
    ("My", 14),
    ("Châu", 13),
    ("Quỳnh", 13),
    ("Xuân", 12),
    ("Liên", 12),
    ("Tuyết", 11),
    ("Hồng", 11),
    ("Giang", 10),
    ("Vân", 10),
    ("Ngân", 10),
    ("Thuý", 6),
    ("Hoà", 5),
];
const DISTRICTS: &[(&str, u32)] = &[
    ("Huyện Châu Thành", 5),
    ("Huyện Cái Bè", 4),
    ("Thị xã Cai Lậy", 4),
    ("Huyện Chợ Gạo", 3),
    ("Huyện Gò Công Tây", 3),
    ("Thành phố Mỹ Tho", 5),
    ("Huyện Tân Phước", 2),
    ("Huyện Tân Phú Đông", 1),
];
const COMMUNES: &[(&str, u32)] = &[
    ("Xã Tân Mỹ Chánh", 2),
    ("Xã Phước Thạnh", 2),
    ("Xã Bình Đức", 2),
    ("Xã Long Hưng", 2),
    ("Xã Tân Hiệp", 2),
    ("Xã Mỹ Phong", 2),
    ("Xã Đạo Thạnh", 2),
    ("Xã Trung An", 2),
    ("Xã Thới Sơn", 1),
    ("Xã Hòa Tịnh", 1),
    ("Phường 1", 2),
    ("Phường 5", 2),
    ("Phường 10", 2),
    ("Xã Song Thuận", 1),
];
const HAMLETS: &[(&str, u32)] = &[
    ("Ấp Bắc", 3),
    ("Ấp Đông", 3),
    ("Ấp Tây", 2),
    ("Ấp Mới", 3),
    ("Ấp 1", 2),
    ("Ấp 2", 2),
    ("Ấp 3", 2),
];

/// Registration-province codes of the old CMND's first two digits, for a
/// few provinces; others use the province code's last two digits.
fn cmnd_prefix(province: u16) -> u16 {
    match province {
        1 => 1,
        79 => 2,
        82 => 31,
        31 => 3,
        48 => 20,
        92 => 36,
        _ => province % 100,
    }
}

/// Age weights: roughly flat to 60, then thinning out to 100.
fn pick_age(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    loop {
        let age = rng.range(lo, hi);
        let keep = if age < 60 {
            1.0
        } else {
            ((101 - age) as f64 / 41.0).powf(1.5)
        };
        if rng.chance(keep) {
            return age;
        }
    }
}

struct Person {
    family: String,
    gender: Gender,
    age: i64,
    relation: &'static str,
}

pub struct Generator {
    options: GenOptions,
    rng: Rng,
    /// Next suffix counter per (century-gender digit, two-digit year).
    buckets: Vec<u32>,
    produced: u64,
    households: u64,
    pending: Vec<ExportRecord>,
    as_of_year: i64,
    /// The family names of the province's region, with their weights.
    family_names: Vec<(&'static str, u32)>,
}

impl Generator {
    pub fn new(options: GenOptions) -> Self {
        let regional = if options.province >= 66 {
            FAMILY_SOUTH
        } else {
            FAMILY_NORTH
        };
        let family_names = [FAMILY_COMMON, regional].concat();
        let as_of_year = civil_from_days(options.as_of.div_euclid(86_400)).0;
        Self {
            rng: Rng(options.seed ^ 0x5eed_0000_0000_0000 ^ u64::from(options.province) << 32),
            options,
            buckets: vec![0; 1000],
            produced: 0,
            households: 0,
            pending: Vec::new(),
            as_of_year,
            family_names,
        }
    }

    fn name(&mut self, family: &str, gender: Gender, birth_year: i64) -> String {
        let modern = birth_year >= 2000;
        let middles: Vec<(&str, u32)> = match gender {
            Gender::Male => MIDDLE_MALE
                .iter()
                .map(|&(m, w)| (m, if modern && m == "Văn" { 12 } else { w }))
                .collect(),
            Gender::Female => MIDDLE_FEMALE
                .iter()
                .map(|&(m, w)| (m, if modern && m == "Thị" { 12 } else { w }))
                .collect(),
        };
        let given = match gender {
            Gender::Male => self.rng.pick(GIVEN_MALE),
            Gender::Female => self.rng.pick(GIVEN_FEMALE),
        };
        let middles: Vec<(&str, u32)> = middles.into_iter().filter(|(m, _)| *m != given).collect();
        let mut name = family.to_owned();
        if !self.rng.chance(0.03) {
            name.push(' ');
            name.push_str(self.rng.pick(&middles));
            if self.rng.chance(0.15) {
                let second = self.rng.pick(&middles);
                if !name.ends_with(second) {
                    name.push(' ');
                    name.push_str(second);
                }
            }
        }
        name.push(' ');
        name.push_str(given);
        name
    }

    fn id_number(&mut self, gender: Gender, mut year: i64) -> Option<PersonalIdNumber> {
        loop {
            let century = (year - 1900).div_euclid(100);
            let digit = century * 2 + i64::from(gender == Gender::Female);
            if !(0..=9).contains(&digit) {
                return None;
            }
            let bucket = (digit * 100 + year.rem_euclid(100)) as usize;
            let counter = self.buckets[bucket];
            if counter < 1_000_000 {
                self.buckets[bucket] += 1;
                // An affine map that is a bijection on 0..10^6 (387_211 is
                // prime to 10^6): unique, scattered suffixes.
                let offset =
                    (self.options.seed.wrapping_mul(1_000_003) + bucket as u64) % 1_000_000;
                let suffix = (u64::from(counter) * 387_211 + offset) % 1_000_000;
                let id = format!(
                    "{:03}{digit}{:02}{suffix:06}",
                    self.options.province,
                    year.rem_euclid(100)
                );
                return PersonalIdNumber::parse(&id).ok();
            }
            year -= 1;
        }
    }

    fn person(
        &mut self,
        p: &Person,
        household: &str,
        address: &str,
        origin: &str,
    ) -> Option<ExportRecord> {
        let birth_year = self.as_of_year - p.age;
        let id_number = self.id_number(p.gender, birth_year)?;
        let birth_year = i64::from(id_number.birth_year());
        let day_of_year = self.rng.range(0, 364);
        let first = days_from_civil(birth_year, 1, 1);
        let (_, month, day) = civil_from_days(first + day_of_year);
        let year_only = if birth_year < 1960 { 0.15 } else { 0.015 };
        let (m, d) = if self.rng.chance(year_only) {
            (0, 0)
        } else if self.rng.chance(0.01) {
            (month, 0)
        } else {
            (month, day)
        };
        let date_of_birth = PartialDate::from_parts(birth_year as u32, m, d)
            .ok()
            .flatten()?;
        let adult_in_2021 = birth_year <= 2007;
        let mut old_id_numbers = Vec::new();
        if adult_in_2021 {
            let count = if self.rng.chance(0.1) { 2 } else { 1 };
            for _ in 0..count {
                let digits = format!(
                    "{:02}{:07}",
                    cmnd_prefix(self.options.province),
                    self.rng.below(10_000_000)
                );
                old_id_numbers.extend(OldIdNumber::parse(&digits).ok());
            }
        }
        let death_chance = 0.002 + if p.age > 70 { 0.06 } else { 0.0 };
        let status = if self.rng.chance(death_chance) {
            CitizenStatus::Deceased
        } else if self.rng.chance(0.002) {
            CitizenStatus::Cancelled
        } else {
            CitizenStatus::Active
        };
        let birth = days_from_civil(birth_year, 1, 1) * 86_400;
        let updated_at = (self.options.as_of - self.rng.range(0, 5 * 365) * 86_400).max(birth);
        Some(ExportRecord {
            id_number,
            full_name: self.name(&p.family, p.gender, birth_year),
            date_of_birth,
            gender: p.gender,
            old_id_numbers,
            place_of_origin: origin.to_owned(),
            permanent_residence: address.to_owned(),
            status,
            household_id: household.to_owned(),
            relation_to_head: p.relation.to_owned(),
            updated_at,
        })
    }

    fn household(&mut self) {
        self.households += 1;
        let province = province_name(self.options.province).unwrap_or("Nước ngoài");
        let family_table = &self.family_names;
        let household = format!("{:03}{:09}", self.options.province, self.households);
        let address = format!(
            "Số {}, {}, {}, {}, {province}",
            self.rng.range(1, 300),
            self.rng.pick(HAMLETS),
            self.rng.pick(COMMUNES),
            self.rng.pick(DISTRICTS)
        );
        let mut origin = || {
            format!(
                "{}, {}, {province}",
                self.rng.pick(COMMUNES),
                self.rng.pick(DISTRICTS)
            )
        };
        let (head_origin, spouse_origin) = (origin(), origin());

        let head_gender = if self.rng.chance(0.7) {
            Gender::Male
        } else {
            Gender::Female
        };
        let head_age = pick_age(&mut self.rng, 22, 95);
        let head_family = self.rng.pick(family_table).to_owned();
        let mut members = vec![(
            Person {
                family: head_family.clone(),
                gender: head_gender,
                age: head_age,
                relation: "Chủ hộ",
            },
            head_origin.clone(),
        )];
        let mut father_family = (head_gender == Gender::Male).then(|| head_family.clone());
        if head_age < 85 && self.rng.chance(0.75) {
            let gender = if head_gender == Gender::Male {
                Gender::Female
            } else {
                Gender::Male
            };
            let family = self.rng.pick(family_table).to_owned();
            if gender == Gender::Male {
                father_family = Some(family.clone());
            }
            let relation = if gender == Gender::Female {
                "Vợ"
            } else {
                "Chồng"
            };
            let age = (head_age + self.rng.range(-5, 5)).clamp(18, 100);
            members.push((
                Person {
                    family,
                    gender,
                    age,
                    relation,
                },
                spouse_origin,
            ));
        }
        let child_family = father_family.unwrap_or(head_family.clone());
        let children = [0, 1, 1, 2, 2, 2, 3, 3, 4][self.rng.below(9) as usize];
        for _ in 0..children {
            let age = head_age - 20 - self.rng.range(0, 18);
            if age < 0 {
                continue;
            }
            let gender = if self.rng.chance(0.51) {
                Gender::Male
            } else {
                Gender::Female
            };
            members.push((
                Person {
                    family: child_family.clone(),
                    gender,
                    age,
                    relation: "Con",
                },
                head_origin.clone(),
            ));
        }
        if head_age < 60 && self.rng.chance(0.25) {
            let gender = if self.rng.chance(0.6) {
                Gender::Female
            } else {
                Gender::Male
            };
            let family = if gender == Gender::Male {
                head_family.clone()
            } else {
                self.rng.pick(family_table).to_owned()
            };
            let relation = if gender == Gender::Male {
                "Cha"
            } else {
                "Mẹ"
            };
            let age = (head_age + self.rng.range(20, 35)).min(100);
            members.push((
                Person {
                    family,
                    gender,
                    age,
                    relation,
                },
                head_origin,
            ));
        }
        for (person, origin) in members {
            if let Some(record) = self.person(&person, &household, &address, &origin) {
                self.pending.push(record);
            }
        }
        self.pending.reverse();
    }
}

impl Iterator for Generator {
    type Item = ExportRecord;

    fn next(&mut self) -> Option<ExportRecord> {
        if self.produced >= self.options.count {
            return None;
        }
        while self.pending.is_empty() {
            self.household();
        }
        self.produced += 1;
        self.pending.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn generate(count: u64, seed: u64) -> Vec<ExportRecord> {
        Generator::new(GenOptions {
            count,
            province: 82,
            seed,
            as_of: DEFAULT_AS_OF,
        })
        .collect()
    }

    #[test]
    fn deterministic_and_exactly_counted() {
        let a = generate(2_000, 7);
        assert_eq!(a.len(), 2_000);
        assert_eq!(a, generate(2_000, 7));
        assert_ne!(a, generate(2_000, 8));
    }

    #[test]
    fn realistic_and_consistent() {
        let people = generate(20_000, 1);
        let ids: HashSet<_> = people
            .iter()
            .map(|p| p.id_number.expose().to_owned())
            .collect();
        assert_eq!(ids.len(), people.len(), "ID numbers must be unique");
        let share = |f: &dyn Fn(&ExportRecord) -> bool| {
            people.iter().filter(|p| f(p)).count() as f64 / people.len() as f64
        };
        for p in &people {
            assert_eq!(p.id_number.registration_code(), 82);
            assert_eq!(p.id_number.gender(), p.gender);
            assert_eq!(p.id_number.birth_year(), p.date_of_birth.year());
            let age = 2026 - i64::from(p.date_of_birth.year());
            assert!((0..=101).contains(&age), "age {age}");
            assert!(crate::domain::PersonName::parse(&p.full_name).is_ok());
            if age < 18 {
                assert!(p.old_id_numbers.is_empty());
            }
        }
        let nguyen = share(&|p| p.full_name.starts_with("Nguyễn "));
        assert!((0.30..0.46).contains(&nguyen), "Nguyễn share {nguyen}");
        let male = share(&|p| p.gender == Gender::Male);
        assert!((0.45..0.55).contains(&male), "male share {male}");
        let year_only = share(&|p| p.date_of_birth.month().is_none());
        assert!(
            (0.005..0.08).contains(&year_only),
            "year-only share {year_only}"
        );
        let deceased = share(&|p| p.status == CitizenStatus::Deceased);
        assert!(
            (0.001..0.05).contains(&deceased),
            "deceased share {deceased}"
        );
        let households: HashSet<_> = people.iter().map(|p| p.household_id.clone()).collect();
        let size = people.len() as f64 / households.len() as f64;
        assert!((3.0..5.0).contains(&size), "household size {size}");
        assert!(people.iter().any(|p| p.old_id_numbers.len() == 2));
    }
}
